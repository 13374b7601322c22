"""Screenshots of the built site in headless Chromium (Qt WebEngine).

  pip install PyQt6 PyQt6-WebEngine        # not a project dependency
  mkdocs build -d /tmp/site
  python docs/screenshots.py /tmp/site /tmp/shots [PAGE.html ...]

Loads each page (default: every index.html of the site) offscreen at
1280 x 2000, waits for it to settle and saves OUT/<page>.png. Pages are
read from disk, so anything the site fetches from the internet (a CDN
script) shows as missing here, as it would for a reader offline.
"""

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS",
                      "--no-sandbox --disable-gpu")


def pages_of(site: str):
  for root, _, files in os.walk(site):
    if "index.html" in files:
      yield os.path.relpath(os.path.join(root, "index.html"), site)


def main(argv):
  from PyQt6.QtCore import QSize, QTimer, QUrl  # pylint: disable=g-import-not-at-top
  from PyQt6.QtWebEngineWidgets import QWebEngineView  # pylint: disable=g-import-not-at-top
  from PyQt6.QtWidgets import QApplication  # pylint: disable=g-import-not-at-top
  site, out = argv[1], argv[2]
  queue = argv[3:] or sorted(pages_of(site))
  os.makedirs(out, exist_ok=True)
  app = QApplication(argv[:1])
  view = QWebEngineView()
  view.resize(QSize(1280, 2000))
  view.show()

  def load_next():
    if not queue:
      app.quit()
      return
    view.load(QUrl.fromLocalFile(os.path.abspath(os.path.join(site,
                                                              queue[0]))))

  def finished(ok):
    page = queue.pop(0)

    def grab():
      name = page.replace("/index.html", "").replace("/", "_")
      name = "home" if name == "index.html" else name
      view.grab().save(os.path.join(out, name + ".png"))
      print(f"{page}: {'ok' if ok else 'FAILED to load'}", flush=True)
      load_next()
    QTimer.singleShot(2000, grab)

  view.loadFinished.connect(finished)
  load_next()
  app.exec()


if __name__ == "__main__":
  main(sys.argv)
