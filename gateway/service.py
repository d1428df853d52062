"""The gateway process: wires the MQTT link, Kafka, uplink/presence and downlink together.

Start-up: Kafka producer (retried with backoff until a broker answers), then the MQTT
link (stable client id, persistent session, PUBACK after the handler), then the
downlink consumer. Shutdown (stop event): stop reading MQTT, wait (bounded) for the
uplinks being handled to be acknowledged, drain in-flight downlink publishes and commit,
flush and close the producer, disconnect. While running, a drop of the broker link that
the gateway did not ask for is recorded as a broker outage (gateway.broker_outages).
"""

from __future__ import annotations

import asyncio
import gc
import logging

from gateway import metrics
from gateway.broker_outages import BrokerOutages, RedisOutageStore
from gateway.inbound import Inbound
from gateway.outbound import Outbound
from gateway.presence import SOURCES
from gateway.settings import UPLINK_FILTER, GatewaySettings
from ota.backoff import Backoff, StoppedError, retry
from ota.kafka_async import AsyncProducer
from ota.kafka_clients import STATIC_MEMBER_ID, make_consumer, make_producer
from ota.kafka_errors import KafkaClientError
from ota.kafka_producer import RecordProducer
from ota.mqtt import LinkConfig, MqttLink
from ota.redis_clients import make_redis
from ota.runtime import Runtime, Service

log = logging.getLogger(__name__)

BACKOFF = Backoff(0.2, 10.0)
# The broker is every device's path to the platform: once it is back after a restart, the
# gateway reconnects within 2 s (an attempt every 2 s at most against a dead broker is
# nothing to it), not up to 10 s later while the devices' uplinks find no subscriber.
BROKER_BACKOFF = Backoff(0.2, 2.0)
GC_THRESHOLD = 50_000  # allocations between young-generation collections (default 700)


def _new_producer(settings: GatewaySettings) -> RecordProducer:
    """A producer with the topics' metadata fetched, so send() never waits for it on the
    loop (blocking: call it on a worker thread)."""
    producer = make_producer(
        settings.common,
        client_id=settings.client_id,
        linger_ms=settings.produce_linger_ms,
        max_block_ms=5_000,
    )
    try:
        for topic in (settings.common.topics.inbox, settings.common.topics.dead_letters):
            producer.partitions_for(topic)
    except KafkaClientError:
        producer.close(timeout=0)
        raise
    return producer


async def _start_producer(settings: GatewaySettings, stop: asyncio.Event) -> RecordProducer | None:
    """A producer once a broker answers (retried by the backoff policy), None if stopped."""
    try:
        producer = await retry(
            "gateway.kafka_connect",
            lambda: asyncio.to_thread(_new_producer, settings),
            on=KafkaClientError,
            policy=BACKOFF,
            stop=stop,
        )
    except StoppedError:
        return None
    metrics.CONNECTED.labels("kafka").set(1)
    return producer


def _link_config(settings: GatewaySettings) -> LinkConfig:
    common = settings.common
    return LinkConfig(
        host=common.mqtt_host,
        port=common.mqtt_platform_port,
        client_id=settings.client_id,
        username=common.mqtt_platform_user,
        password=common.mqtt_platform_password,
        clean_start=False,
        session_expiry_s=settings.session_expiry_s,
        receive_maximum=min(settings.uplink_in_flight, 65535),
        ack_after_handler=True,
        max_publishes_in_flight=settings.downlink_in_flight,
        backoff=BROKER_BACKOFF,
        refusals_raise=True,  # a refused command is dead-lettered, not counted as published
        tls=settings.platform_tls_context(),
    )


async def main(settings: GatewaySettings, rt: Runtime) -> None:
    _tune_gc()
    await run(settings, rt)


def _tune_gc() -> None:
    """Every uplink allocates a few dozen objects, and up to the in-flight bound of
    messages live until Kafka answered, so they outlive young collections: with the
    default thresholds the cycle collector ran every 700 allocations and kept rescanning
    the long-lived heap, about a fifth of the gateway's CPU per message (bench/RESULTS.md,
    issue 14). Collect rarely, and never scan what startup made (as the workers do)."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 100)


SERVICE = Service(
    prog="gateway",
    name="gateway",
    load=GatewaySettings.from_env,
    common=lambda s: s.common,
    metrics_port=lambda s: s.metrics_port,
    stop_timeout_s=lambda s: 3 * s.drain_timeout_s,
    main=main,
)


async def run(
    settings: GatewaySettings,
    rt: Runtime,
    ready: asyncio.Event | None = None,
    *,
    inbound_type: type[Inbound] = Inbound,
) -> None:
    """Run until `rt.stop` is set (the uplink recovery and the downlink run as the
    runtime's supervised tasks); `ready` is set once uplinks are subscribed (tests wait
    on it); `inbound_type` is the uplink handler (a fault test passes a subclass)."""
    stop = rt.stop
    loop = asyncio.get_running_loop()
    kafka = await _start_producer(settings, stop)
    if kafka is None:
        return
    producer = AsyncProducer(
        kafka,
        loop,
        lambda: _new_producer(settings),
        BACKOFF,
        wakeup_delay_s=settings.produce_linger_ms / 2000,  # half the linger: delays nothing
        renew_operation="gateway.producer_renew",
    )
    presence = SOURCES.get(settings.presence_source)
    subscriptions = [(settings.split.uplink_filter(UPLINK_FILTER), 1)]
    if presence is not None:
        subscriptions.append((presence.topic_filter, 1))

    link_box: list[MqttLink] = []
    inbound = inbound_type(
        settings,
        producer,
        presence,
        pause_reading=lambda: link_box[0].pause_reading(),
        resume_reading=lambda: link_box[0].resume_reading(),
    )
    outages = BrokerOutages(RedisOutageStore(lambda: make_redis(settings.common)), stop)

    def link_changed(up: bool) -> None:
        metrics.CONNECTED.labels("mqtt").set(1 if up else 0)
        outages.link_changed(up, session_kept=up and link_box[0].session_present)

    link = MqttLink(
        _link_config(settings),
        subscriptions,
        on_message_acked=inbound.receive,
        on_state=link_changed,
    )
    link_box.append(link)
    rt.spawn(inbound.recovery(stop), "uplink-recovery")
    try:
        await link.connect(stop)
    except ConnectionAbortedError:
        await producer.close(settings.drain_timeout_s)
        return
    log.info(
        "gateway started",
        extra={
            "client_id": settings.client_id,
            "split": settings.split.mode.value,
            "replicas": settings.split.replicas,
            "index": settings.split.index,
        },
    )
    outbound = Outbound(
        lambda: make_consumer(
            settings.common,
            group_id=settings.consumer_group,
            client_id=settings.client_id,
            max_poll_records=min(settings.downlink_in_flight, 2000),
            # The client id is this replica's own (its MQTT session too): as a static member
            # a restarted gateway takes its command partitions straight back.
            group_instance_id=(
                settings.client_id if STATIC_MEMBER_ID.fullmatch(settings.client_id) else None
            ),
        ),
        settings.common.topics.commands,
        link,
        producer,
        settings.common.topics.dead_letters,
        settings.downlink_in_flight,
        group=settings.consumer_group,
    )
    downlink = rt.spawn(outbound.run(stop), "downlink")  # a crash stops the service
    rt.started()
    try:
        if ready is not None:
            await link.subscribed.wait()
            ready.set()
        await stop.wait()
    finally:
        outages.close()
        await _shutdown(settings, link, inbound, outbound, producer, downlink)


async def _shutdown(
    settings: GatewaySettings,
    link: MqttLink,
    inbound: Inbound,
    outbound: Outbound,
    producer: AsyncProducer,
    downlink: asyncio.Task[None],
) -> None:
    log.info("gateway stopping", extra={"uplinks_in_flight": inbound.in_flight})
    link.pause_reading()
    try:
        await asyncio.wait_for(inbound.idle.wait(), settings.drain_timeout_s)
    except TimeoutError:
        log.warning(
            "uplinks still in flight at shutdown; the broker redelivers them",
            extra={"in_flight": inbound.in_flight},
        )
    # Waited, not awaited: a crash of the downlink is the runtime's to report, and the
    # rest of the shutdown still runs.
    _, late = await asyncio.wait({downlink}, timeout=settings.drain_timeout_s)
    for task in late:
        task.cancel()
    await outbound.drain(settings.drain_timeout_s)
    await link.close()
    await producer.close(settings.drain_timeout_s)
    metrics.CONNECTED.labels("mqtt").set(0)
    metrics.CONNECTED.labels("kafka").set(0)
    log.info("gateway stopped")
