"""A host that sends its staff to an admin site of its own (``/crm-admin/``), as some CRMs do,
with the app's model admins registered there through ``followup_visibility.admin.register``."""

from django.contrib import admin
from django.urls import path

from followup_visibility.admin import register

crm_site = admin.AdminSite(name="crm_admin")
register(crm_site)

urlpatterns = [path("crm-admin/", crm_site.urls)]
