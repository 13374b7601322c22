"""The jobs behind `python -m jaxkd.main`: each is one module whose
`run(settings, workdir)` does the whole job and returns what it writes to
results.json (`active`, `unix`), or the saved teacher's metadata
(`teacher`). `jaxkd.experiment` reads the config and dispatches."""
