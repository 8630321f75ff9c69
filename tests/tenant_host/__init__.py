"""A two-company host CRM for the tenancy tests: a company key on every lead, and a default
manager that filters by the current company, as request-scoped multi-company CRMs do."""
