"""The trainer: ``train(TrainConfig)`` in one process or under ``torchrun`` (DDP), resumable bit for bit."""
