"""Streamlit presentation helpers. Only this package and app.py import streamlit."""
