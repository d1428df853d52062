from tests.integration.gateway.conftest import devices, kafka_producer, readers, stack

__all__ = ["devices", "kafka_producer", "readers", "stack"]
