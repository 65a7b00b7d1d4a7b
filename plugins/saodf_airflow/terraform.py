"""Airflow hook and operator that apply and destroy the per-run batch stack with Terraform.

Use ``TerraformBatchOperator(action="apply")`` before the batch tasks and
``TerraformBatchOperator(action="destroy", trigger_rule=TriggerRule.ALL_DONE)`` at the end,
so the stack is destroyed whether the tasks in between succeeded, failed or were skipped
(``ALL_DONE`` runs the task once every upstream task has finished in any state). A destroy
that leaves resources behind fails the task with the resources' addresses, and with
``ALL_DONE`` the failed teardown also fails the DAG run.

The Terraform work itself is in :mod:`saodf.teardown`; this module adds the Airflow parts:
the run key from the scope task's XCom, AWS credentials from an Airflow connection, and
Terraform's output streamed into the task log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseHook, BaseOperator

logger = logging.getLogger(__name__)

ACTIONS = ("apply", "destroy")


class TerraformBatchHook(BaseHook):
    """Run the batch stack's ``apply`` and ``destroy`` for one run key.

    Args:
        aws_conn_id: Airflow AWS connection whose credentials Terraform uses on the aws
            target; None uses the worker's own credential chain (instance or task role).
        settings: SAODF settings; default :func:`saodf.config.get_settings`.
        setup: Terraform binary, mirror, state backend and retries; default from the env.
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = "aws_default"
    conn_type = "aws"
    hook_name = "SAODF Terraform batch stack"

    def __init__(self, aws_conn_id: str | None = None, settings=None, setup=None) -> None:
        super().__init__()
        self.aws_conn_id = aws_conn_id
        self._settings = settings
        self._setup = setup

    @property
    def settings(self):
        from saodf.config import get_settings

        return self._settings or get_settings()

    def credentials_env(self) -> dict[str, str]:
        """Return AWS credential variables from the connection (empty without a connection)."""
        if self.aws_conn_id is None or self.settings.target != "aws":
            return {}
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        hook = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="sts")
        credentials = hook.get_credentials()
        env = {
            "AWS_ACCESS_KEY_ID": credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
        }
        if credentials.token:
            env["AWS_SESSION_TOKEN"] = credentials.token
        region = hook.region_name
        if region:
            env["AWS_REGION"] = region
        return env

    def apply(self, run_key: str, log=None, variables: Mapping[str, Any] | None = None) -> dict:
        from saodf.teardown import apply_batch

        return apply_batch(
            self.settings,
            run_key,
            log or self.log.info,
            variables=variables,
            env=self.credentials_env(),
            setup=self._setup,
        )

    def destroy(self, run_key: str, log=None) -> dict:
        from saodf.teardown import teardown_batch

        return teardown_batch(
            self.settings,
            run_key,
            log or self.log.info,
            env=self.credentials_env(),
            setup=self._setup,
        )


class TerraformBatchOperator(BaseOperator):
    """Apply or destroy the batch stack of the current run and return the result dict.

    Args:
        action: ``apply`` or ``destroy``.
        run_key: the run key (templated); None reads ``run_key`` from the XCom of
            ``scope_task_id`` and falls back to ``airflow-<run_id>`` when that task produced
            nothing (for example because it failed), the key the DAG's teardown uses.
        scope_task_id: task whose return value is the run scope with a ``run_key``.
        variables: extra Terraform variables for ``apply`` (templated).
        aws_conn_id: Airflow AWS connection for the aws target; None uses the worker's role.

    Set ``trigger_rule=TriggerRule.ALL_DONE`` on the ``destroy`` task so that it runs after
    failed or skipped upstream tasks too.
    """

    template_fields: Sequence[str] = ("run_key", "variables")
    ui_color = "#7b42bc"

    def __init__(
        self,
        *,
        action: str,
        run_key: str | None = None,
        scope_task_id: str = "resolve_scope",
        variables: Mapping[str, Any] | None = None,
        aws_conn_id: str | None = None,
        settings=None,
        setup=None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if action not in ACTIONS:
            raise ValueError(f"action={action!r} is invalid; use one of {', '.join(ACTIONS)}")
        self.action = action
        self.run_key = run_key
        self.scope_task_id = scope_task_id
        self.variables = dict(variables or {})
        self.aws_conn_id = aws_conn_id
        self.settings = settings
        self.setup = setup

    def resolve_run_key(self, context) -> str:
        """Return the configured run key, the scope task's, or ``airflow-<run_id>``."""
        if self.run_key:
            return str(self.run_key)
        scope = context["ti"].xcom_pull(task_ids=self.scope_task_id)
        if isinstance(scope, Mapping) and scope.get("run_key"):
            return str(scope["run_key"])
        return f"airflow-{context['run_id']}"

    def execute(self, context) -> dict:
        from saodf.teardown import TeardownError

        run_key = self.resolve_run_key(context)
        hook = TerraformBatchHook(
            aws_conn_id=self.aws_conn_id, settings=self.settings, setup=self.setup
        )
        self.log.info("terraform %s of the batch stack of run %s", self.action, run_key)
        if self.action == "apply":
            return hook.apply(run_key, self.log.info, variables=self.variables or None)
        try:
            return hook.destroy(run_key, self.log.info)
        except TeardownError as exc:
            # Keep the addresses in XCom too, so alerts and later tasks can list them.
            context["ti"].xcom_push(key="surviving_resources", value=exc.survivors)
            self.log.error(
                "teardown of run %s left %d resources: %s",
                run_key,
                len(exc.survivors),
                ", ".join(exc.survivors),
            )
            raise
