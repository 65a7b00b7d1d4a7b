#!/bin/sh
# Ping Redis as the ACL user; REDISCLI_AUTH keeps the password off the command line.
set -eu
REDISCLI_AUTH="$(cat /run/secrets/redis_password)" \
  redis-cli --user "${REDIS_USER:-saodf}" ping | grep -q PONG
