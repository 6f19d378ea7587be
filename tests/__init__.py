"""Test suite. Tests run offline: nothing may be downloaded at run time.

Uploads go to a folder of this test run's own (``GRADIO_TEMP_DIR``), removed when it ends, so that
tests which count the files in it see only their own, whatever else runs on the machine.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
if "GRADIO_TEMP_DIR" not in os.environ:
    _uploads = tempfile.mkdtemp(prefix="glance-focus-tests-uploads-")
    os.environ["GRADIO_TEMP_DIR"] = _uploads
    atexit.register(shutil.rmtree, _uploads, ignore_errors=True)
