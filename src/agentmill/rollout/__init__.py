"""Rollout: the agent loop, the tool-call protocol, and the tools."""
