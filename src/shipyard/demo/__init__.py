"""`shipyard demo`: the whole loop, from raw data to a retrained champion, on one machine.

Every step runs the commands a user would (`dvc repro`, `shipyard promote`, the webhook, the
canary, `shipyard drift check`, `shipyard retrain`) as separate processes in a scratch copy
of the repository, against a real `mlflow server`.
"""
