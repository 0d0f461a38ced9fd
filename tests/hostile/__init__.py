"""Hostile and broken submissions for the worker's tests, each with the outcome it must get."""
