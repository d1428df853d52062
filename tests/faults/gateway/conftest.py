from tests.integration.gateway.conftest import kafka_producer, readers, stack

__all__ = ["kafka_producer", "readers", "stack"]
