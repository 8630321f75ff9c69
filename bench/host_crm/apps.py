from django.apps import AppConfig


class HostCrmConfig(AppConfig):
    name = "host_crm"
    default_auto_field = "django.db.models.BigAutoField"
