#!/bin/sh
# LocalStack READY hook (mounted into /etc/localstack/init/ready.d/): the queue the flow reads.
# Idempotent: create-queue returns the existing queue when the attributes are the same.
set -eu
awslocal sqs create-queue --queue-name login-queue --region "${AWS_DEFAULT_REGION:-us-east-1}"
