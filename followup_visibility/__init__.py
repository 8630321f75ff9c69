"""A follow-up control layer above a Django CRM."""

__version__ = "0.1.0.dev0"
