"""WSGI entry point of the bulkhead example site (for gunicorn, uWSGI, mod_wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "embedsite.settings")
application = get_wsgi_application()
