"""Shared types and helpers every other package builds on: the Video record, segment tables, the time
grid, temporal IoU, errors, storage and torch thread set-up. Imports nothing else of raytal."""
