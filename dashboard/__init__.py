"""Dashboard logic without Streamlit: assembling bars, pair analytics, tables and exports.

Kept apart from ``ui/`` (presentation) and ``app.py`` (composition) so it is unit-testable and
benchmarkable without a browser session.
"""
