"""Image folders read by reader processes: the same pixels as Pillow, in
order, one pool reused across passes, a changed file one line, and a
user's script without a main guard is not run again by the readers."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxkd import JaxkdError
from jaxkd.data import sources
from jaxkd.data.folder import FolderSource

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _folder(root, n=60, seed=0):
  rng = np.random.default_rng(seed)
  for i in range(n):
    d = os.path.join(root, str(i % 3))
    os.makedirs(d, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (9, 7), dtype=np.uint8)).save(
        os.path.join(d, f"{i:03d}.png"))
  return root


def _pillow_reference(src):
  return np.stack([np.asarray(Image.open(os.path.join(src.root, f)),
                              np.float32) / 255 for f in src.files])[..., None]


@pytest.fixture
def small_threshold(monkeypatch):
  monkeypatch.setattr(sources, "PROCESS_MIN_ITEMS", 1)


def test_reader_processes_give_pillows_pixels_in_order(tmp_path,
                                                       small_threshold):
  src = FolderSource(_folder(str(tmp_path)), read_processes=2)
  want = _pillow_reference(src)
  view = src.take(np.arange(5, 60))
  got = np.concatenate(list(sources.iter_batches(view, 8)))
  np.testing.assert_array_equal(got, want[5:])
  pool = sources._POOLS[2]
  pids = [p.pid for p in pool.procs]
  for b, batch in enumerate(sources.iter_batches(view, 8)):  # left early
    if b == 2:
      break
  again = np.concatenate(list(sources.iter_batches(view, 16, start=3)))
  np.testing.assert_array_equal(again, want[8:])
  assert [p.pid for p in sources._POOLS[2].procs] == pids  # reused


def test_a_file_changed_after_opening_is_one_line_and_the_pool_recovers(
    tmp_path, small_threshold):
  src = FolderSource(_folder(str(tmp_path)), read_processes=2)
  bad = os.path.join(src.root, src.files[30])
  with open(bad, "wb") as f:
    f.write(b"not a png")
  with pytest.raises(JaxkdError, match="cannot be read now") as e:
    list(sources.iter_batches(src, 8))
  assert src.files[30] in str(e.value) and "\n" not in str(e.value)
  ok = src.take(np.arange(0, 24))
  np.testing.assert_array_equal(
      np.concatenate(list(sources.iter_batches(ok, 8))),
      np.stack([np.asarray(Image.open(os.path.join(src.root, f)), np.float32)
                / 255 for f in src.files[:24]])[..., None])


def test_a_script_without_a_main_guard_runs_once(tmp_path):
  _folder(str(tmp_path / "imgs"), n=30)
  count = tmp_path / "count.txt"
  script = tmp_path / "user_script.py"
  script.write_text(
      "import numpy as np\n"
      "from jaxkd.data import sources\n"
      "from jaxkd.data.folder import FolderSource\n"
      f"open({str(count)!r}, 'a').write('x')\n"
      "sources.PROCESS_MIN_ITEMS = 1\n"
      f"src = FolderSource({str(tmp_path / 'imgs')!r}, read_processes=2)\n"
      "print(sum(len(b) for b in sources.iter_batches(src, 4)))\n")
  out = subprocess.run([sys.executable, str(script)], capture_output=True,
                       text=True, cwd=str(tmp_path), timeout=120,
                       env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "30"
  assert count.read_text() == "x"
