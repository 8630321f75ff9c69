from django.conf import settings
from django.db import migrations

from host_crm.spec import N_MODELS, fields, model_name


class Migration(migrations.Migration):
    initial = True

    dependencies = [migrations.swappable_dependency(settings.AUTH_USER_MODEL)]

    operations = [
        migrations.CreateModel(name=model_name(i), fields=fields(i)) for i in range(N_MODELS)
    ]
