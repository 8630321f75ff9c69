"""``Record000`` .. ``Record099``, built from ``spec.py``."""

from __future__ import annotations

from django.db import models

from host_crm.spec import N_MODELS, fields, model_name

for _i in range(N_MODELS):
    _attrs = {"__module__": __name__, **dict(fields(_i))}
    globals()[model_name(_i)] = type(model_name(_i), (models.Model,), _attrs)
