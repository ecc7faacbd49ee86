"""Turn the Amazon Bin Image Dataset (or synthetic bins) into a counting dataset.

`python -m data_tools --help` lists the commands: synth, download, build, upload, stats.
"""
