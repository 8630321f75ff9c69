from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class FollowupVisibilityConfig(AppConfig):
    name = "followup_visibility"
    verbose_name = _("Follow-up visibility")
    # Explicit so that the host's DEFAULT_AUTO_FIELD never creates migrations for us.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from followup_visibility import checks, receivers

        checks.register()
        receivers.connect()
