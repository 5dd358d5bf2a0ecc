"""connectors/sqs"""
