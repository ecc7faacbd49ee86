"""BinAudit's analyst-facing side: the audit core (`app.audit`) and the Streamlit dashboard."""
