# Read only by the `flask` command in a checkout (a development tool). Production runs
# gunicorn wsgi:app with ELYSIUM_ENV=production in its environment, which this never overrides.
FLASK_APP=wsgi
ELYSIUM_ENV=development
