#!/bin/sh
# Create the Airflow and MLflow databases, owned by the compose user, on first start.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE DATABASE airflow OWNER "$POSTGRES_USER";
CREATE DATABASE mlflow OWNER "$POSTGRES_USER";
SQL
