"""Preferences: the store, the annotation web page, simulated people and query selection.

    PreferenceStore       trajectories, queries, annotators, answers (SQLAlchemy; SQLite WAL default)
    create_app            the FastAPI annotation server (web page + JSON API) over a store
    PreferenceClient      the JSON API from Python (scripts, simulated annotators, benchmarks)
    select_queries        choose which pairs to ask about next (random, disagreement)
"""

from robalign.preferences.store import Answer, AnswerConflictError, PreferenceStore, UnknownIdError

__all__ = ["Answer", "AnswerConflictError", "PreferenceStore", "UnknownIdError"]
