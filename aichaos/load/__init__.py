"""Load generation. Only aichaos.load.locust_process imports locust, and only in its own process."""
