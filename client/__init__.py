"""On-prem daemon: collectors, local store, local training and federation client."""
