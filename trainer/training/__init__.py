"""Multi-task DeepSpeed training: run config, data, tasks, sampling, loop, checkpoints, export."""
