"""vtlab: acceptance-test harness for welfare technology."""
