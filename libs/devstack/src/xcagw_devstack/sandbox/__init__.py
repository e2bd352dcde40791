"""Local NHS sandbox: OAuth, PDS, SDS, GP Connect and terminology fakes on one port.

`create_app` (app.py) builds the FastAPI app, `main` (cli.py) runs it, `panel` holds the built-in
patients and `synthetic` the deterministic GP Connect record generator. Nothing here does I/O at
import time.
"""
