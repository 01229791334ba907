"""Settings of the bulkhead Django example: an API-only site, no database, no sessions."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "embedsite.urls"
INSTALLED_APPS = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {}
USE_TZ = True
WSGI_APPLICATION = "embedsite.wsgi.application"

# Where the bulkhead daemon is (None: $BULKHEAD_URL, else http://127.0.0.1:8787), the pool,
# and each job's deadline in seconds.
BULKHEAD_URL = os.environ.get("BULKHEAD_URL")
BULKHEAD_POOL = os.environ.get("BULKHEAD_POOL", "embed")
BULKHEAD_TIMEOUT = float(os.environ.get("BULKHEAD_TIMEOUT", "10"))
