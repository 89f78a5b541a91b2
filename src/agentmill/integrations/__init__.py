"""Bridges to trainers: our rewards as TRL reward functions (`integrations.trl`) and as a verl
`compute_score` (`integrations.verl`). Importing this package imports no trainer."""
