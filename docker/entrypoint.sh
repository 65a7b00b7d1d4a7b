#!/bin/sh
# Turn the compose secrets under /run/secrets into what SAODF and its tools read, then run
# the service's command. Secrets stay in files: none is passed on a command line.
set -eu

secrets_dir="${SAODF_HOME}/secrets"
mkdir -p "$secrets_dir"
chmod 0700 "$secrets_dir"
umask 077

# An empty secret means its .env variable was left blank: stop instead of running unsecured.
for secret in /run/secrets/*; do
  [ -e "$secret" ] || continue
  if [ ! -s "$secret" ]; then
    echo "error: secret $(basename "$secret") is empty; set it in .env (see docker/env.template)" >&2
    exit 1
  fi
done

copy_secret() {
  # copy_secret NAME: /run/secrets/NAME -> $SAODF_HOME/secrets/NAME (mode 0600)
  if [ -f "/run/secrets/$1" ]; then
    cp "/run/secrets/$1" "$secrets_dir/$1"
  fi
}

copy_secret redis_password
copy_secret gateway_keys.json
copy_secret airflow_admin_password

# libpq reads PGPASSWORD, so the database URLs of Airflow and MLflow carry no password.
if [ -f /run/secrets/postgres_password ]; then
  PGPASSWORD="$(cat /run/secrets/postgres_password)"
  export PGPASSWORD
fi

# SimpleAuthManager reads the admin password from a JSON file.
if [ -f /run/secrets/airflow_admin_password ]; then
  mkdir -p "$AIRFLOW_HOME"
  printf '{"admin": "%s"}\n' "$(cat /run/secrets/airflow_admin_password)" \
    > "$AIRFLOW_HOME/simple_auth_manager_passwords.json"
fi

exec "$@"
