"""deploy/lambda/template.yaml (AWS SAM), checked offline.

cfn-lint runs twice: on the template as written, and on the plain CloudFormation that AWS's
SAM translator (what `sam validate` and CloudFormation's transform run) expands it to, which
also checks the IAM action names and the function's runtime. Then what the linters cannot know:
the handler exists, the event source mapping reports item failures, the queue outlives the
function's timeout, the role grants only what the function and its poller use.
"""

from __future__ import annotations

import copy
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
from cfnlint.decode import decode
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from logins.core.config import load_config
from logins.core.secretrefs import SecretRef, parse
from tests.helpers import REPO

TEMPLATE = REPO / "deploy" / "lambda" / "template.yaml"
CFN_LINT = str(Path(sys.executable).with_name("cfn-lint"))


def _load(path: Path = TEMPLATE) -> dict[str, Any]:
    template, problems = decode(str(path))
    assert not problems, problems
    assert isinstance(template, dict)
    return template


def _translate(template: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation SAM's transform makes of `template` (the local CodeUri stands for
    the S3 object `sam deploy` uploads, as cfn-lint's own SAM support used to do)."""
    sam = copy.deepcopy(template)
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/function.zip"
    translator = Translator(
        None, Parser(), boto_session=boto3.session.Session(region_name="us-east-1")
    )
    result: dict[str, Any] = translator.translate(
        json.loads(json.dumps(sam)), parameter_values={}, get_managed_policy_map=dict
    )
    return result


def _lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    """One cfn-lint run over `paths` (its start-up is most of the time)."""
    return subprocess.run(
        [CFN_LINT, "--format", "parseable", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _with_translation(template_path: Path) -> list[Path]:
    """The template and, beside it, the CloudFormation it translates to."""
    translated = template_path.with_suffix(".translated.json")
    translated.write_text(json.dumps(_translate(_load(template_path)), indent=1))
    return [template_path, translated]


def test_cfn_lint_finds_nothing(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(TEMPLATE.read_text())  # the same folder: CodeUri ../.. is not checked
    result = _lint(*_with_translation(template))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


BROKEN = [  # (what the template says, a mistake, the rule that must catch it)
    ("[ReportBatchItemFailures]", "[ReportBatchFailures]", "E3030"),  # as written
    ("Resource: !GetAtt LoginQueue.Arn", "Resource: !GetAtt LoginQueu.Arn", "E1010"),
    ("- sqs:ReceiveMessage", "- sqs:RecieveMessage", "W3037"),  # only in the translation
    ("Runtime: python3.11", "Runtime: python2.0", "E3030"),  # only in the translation
]


def test_a_broken_template_is_caught(tmp_path: Path) -> None:
    text = TEMPLATE.read_text()
    paths: list[Path] = []
    for number, (right, wrong, _) in enumerate(BROKEN):
        assert right in text
        path = tmp_path / f"broken{number}.yaml"
        path.write_text(text.replace(right, wrong, 1))
        paths += _with_translation(path)
    result = _lint(*paths)
    assert result.returncode != 0
    for number, (_, wrong, rule) in enumerate(BROKEN):
        findings = [line for line in result.stdout.splitlines() if f"/broken{number}." in line]
        assert [f for f in findings if f":{rule}:" in f], (wrong, findings)


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {n: r["Properties"] for n, r in template["Resources"].items() if r["Type"] == kind}


def test_the_event_source_mapping_reports_item_failures_for_the_function() -> None:
    template = _load()
    (mapping,) = _resources(template, "AWS::Lambda::EventSourceMapping").values()
    (function,) = _resources(template, "AWS::Serverless::Function").values()
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["LoginQueue", "Arn"]}
    assert mapping["BatchSize"] == {"Ref": "BatchSize"}
    assert mapping["MaximumBatchingWindowInSeconds"] == {"Ref": "MaximumBatchingWindowInSeconds"}
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "MaximumConcurrency"}}
    module, name = function["Handler"].rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))
    assert function["Runtime"] == "python3.11"  # bytewax 0.21.1's wheels stop at 3.12


def test_timeouts_fit_together() -> None:
    """Lambda's own rule (queue visibility >= function timeout, AWS advises 6x), and the
    function outlives the handler's give-up on the database, so an outage is answered."""
    template = _load()
    queue = template["Resources"]["LoginQueue"]["Properties"]
    function = template["Resources"]["LoginsFunction"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
    config = _lambda_config(template)
    sink = config.sink
    assert function["Timeout"] >= 2 * (
        sink.retry.give_up_after_seconds + sink.connect_timeout_seconds
    )
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["LoginDeadLetterQueue", "Arn"]}
    receives = template["Parameters"]["MaxReceiveCount"]
    assert receives["MinValue"] > sink.poison_after_attempts  # parked before it is moved


def _environment(template: dict[str, Any]) -> dict[str, Any]:
    variables = template["Resources"]["LoginsFunction"]["Properties"]["Environment"]["Variables"]
    assert isinstance(variables, dict)
    return variables


def _with_defaults(template: dict[str, Any], value: Any) -> str:
    """A `!Sub` of parameters, with their defaults (or the value itself if it is a string)."""
    if isinstance(value, str):
        return value
    text: str = value.get("Fn::Sub", "") if isinstance(value, dict) else ""
    for name, parameter in template["Parameters"].items():
        text = text.replace("${" + name + "}", str(parameter.get("Default", "")))
    return text


def _lambda_config(template: dict[str, Any]) -> Any:
    env = {k: _with_defaults(template, v) for k, v in _environment(template).items() if k in (
        "LOGINS_ENV", "LOGINS_TOKEN_KEY_FILE", "LOGINS_VAULT_PUBLIC_KEY_FILE")}  # fmt: skip
    env.update(SQS_QUEUE_URL="q", AWS_REGION="us-east-1", DATABASE_URL="postgresql://x")
    return load_config(env)


def test_the_secrets_come_from_both_stores() -> None:
    template = _load()
    env = {k: _with_defaults(template, v) for k, v in _environment(template).items()}
    assert env["LOGINS_ENV"] == "lambda"
    assert parse(env["DATABASE_URL"]) == SecretRef("secretsmanager", "logins/database-url")
    config = _lambda_config(template)
    assert config.tokens.key_file == SecretRef("secretsmanager", "logins/token-key")
    assert config.vault.public_key_file == SecretRef("ssm", "/logins/vault.pub")


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for policy in role["Policies"]:
        if "Fn::If" in policy:  # the optional KMS statement
            policy = policy["Fn::If"][1]
        found += policy["PolicyDocument"]["Statement"]
    return found


def _actions(statement: dict[str, Any]) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def test_the_role_grants_only_what_is_used() -> None:
    translated = _translate(_load())
    roles = _resources(translated, "AWS::IAM::Role")
    assert list(roles) == ["LoginsFunctionRole"]  # SAM added no role of its own
    role = roles["LoginsFunctionRole"]
    assert "ManagedPolicyArns" not in role
    statements = _statements(role)
    assert all(s["Effect"] == "Allow" for s in statements)
    granted = {s["Sid"]: (_actions(s), s["Resource"]) for s in statements}
    assert granted["EventSourceMapping"] == (
        {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
        {"Fn::GetAtt": ["LoginQueue", "Arn"]},
    )
    assert granted["ReadTheSecrets"][0] == {"secretsmanager:GetSecretValue"}
    assert [r["Fn::Sub"].rsplit(":", 1)[1] for r in granted["ReadTheSecrets"][1]] == [
        "${DatabaseUrlSecretName}-??????",
        "${TokenKeySecretName}-??????",
    ]
    assert granted["ReadTheVaultPublicKey"][0] == {"ssm:GetParameter"}
    assert granted["WriteItsLogs"] == (
        {"logs:CreateLogStream", "logs:PutLogEvents"},
        {"Fn::GetAtt": ["LoginsLogGroup", "Arn"]},
    )
    assert granted["TokensByKmsHmac"] == ({"kms:GenerateMac"}, {"Ref": "TokenKmsKeyArn"})
    everywhere = set().union(*(_actions(s) for s in statements if s["Resource"] == "*"))
    assert everywhere and all(("NetworkInterface" in a) or a in (
        "ec2:DescribeSubnets", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"
    ) for a in everywhere)  # fmt: skip
    assert set(granted) == {
        "EventSourceMapping",
        "ReadTheSecrets",
        "ReadTheVaultPublicKey",
        "WriteItsLogs",
        "NetworkInterfacesInTheVpc",
        "TokensByKmsHmac",
    }
