"""BinAudit's analyst-facing side: the audit core (`audit`) and the Streamlit dashboard."""
