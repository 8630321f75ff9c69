from django.contrib import admin

from example_project.crm.models import Deal, Lead


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # not subscriptable at runtime
    list_display = ("name", "company", "source", "status", "owner", "created_at", "next_step_at")
    list_filter = ("status", "source", "team")
    list_select_related = ("owner",)
    search_fields = ("name", "company", "phone", "email")
    raw_id_fields = ("owner",)


@admin.register(Deal)
class DealAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # not subscriptable at runtime
    list_display = ("name", "stage", "status", "owner", "amount", "created_at", "next_step_at")
    list_filter = ("stage", "status", "team")
    list_select_related = ("owner",)
    search_fields = ("name", "contact_phone", "contact_email")
    raw_id_fields = ("owner", "lead")
