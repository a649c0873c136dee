"""The Stepline scenarios served by Flask, on its own (werkzeug) threaded server.

``python -m tests.e2e.apps.stepline_flask_app PORT``. Configured as any Stepline app
(``STEPLINE_*``); ``E2E_APP_ID`` names the app.
"""

from __future__ import annotations

import os
import sys

import flask

import stepline
import stepline.flask
from tests.e2e.apps.stepline_functions import make_functions

client = stepline.Stepline(app_id=os.environ.get("E2E_APP_ID", "e2e-flask"))
app = flask.Flask(__name__)
stepline.flask.serve(app, client, make_functions(client, os.environ.get("E2E_EVENT_PREFIX", "flask")))

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True, use_reloader=False)
