"""The audit core: bins, predictions, the mismatch queue and analysts' decisions.

Free of Streamlit: the dashboard's pages call these functions, and so does
`python -m audit` (import, score, queue, decide, history, export, overview).
"""
