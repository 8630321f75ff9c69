"""The unfollowed register and its metrics: what the API, the admin and the dashboard read."""
