"""Routes of the bulkhead example site."""

from django.urls import path

from . import views

urlpatterns = [
    path("embed", views.embed),
    path("healthz", views.healthz),
]
