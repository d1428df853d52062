package io.otarollout.broker;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.BooleanSupplier;
import java.util.function.IntSupplier;

/**
 * The extension's counters, rendered in Prometheus' text format by {@link #render()}.
 * Label values come only from {@link Reason}, so their number is bounded.
 */
final class BrokerMetrics {
    enum Kind { DEVICE, PLATFORM }

    private final Map<Reason, LongAdder> connects = new ConcurrentHashMap<>();
    private final Map<Kind, AtomicLong> connected = new ConcurrentHashMap<>();
    private final LongAdder kicks = new LongAdder();
    private final LongAdder presenceFailures = new LongAdder();
    private final LongAdder presenceDropped = new LongAdder();
    private volatile IntSupplier presenceHeld = () -> 0;
    private volatile BooleanSupplier presenceReleasing = () -> false;
    private final Map<String, LongAdder> revocations = new ConcurrentHashMap<>();
    private final LongAdder revocationDisconnects = new LongAdder();
    private final AtomicLong revocationsSubscribed = new AtomicLong();
    private final AtomicLong deviceCas = new AtomicLong();
    private final AtomicLong deviceCasRefused = new AtomicLong();

    void connect(Reason reason) {
        connects.computeIfAbsent(reason, r -> new LongAdder()).increment();
    }

    void connected(Kind kind) {
        connected.computeIfAbsent(kind, k -> new AtomicLong()).incrementAndGet();
    }

    void disconnected(Kind kind) {
        connected.computeIfAbsent(kind, k -> new AtomicLong()).decrementAndGet();
    }

    long connectedNow(Kind kind) {
        AtomicLong count = connected.get(kind);
        return count == null ? 0 : count.get();
    }

    void kick() {
        kicks.increment();
    }

    void presenceFailed() {
        presenceFailures.increment();
    }

    /** A held presence event dropped at the hold's bound (PresenceHold). */
    void presenceDropped() {
        presenceDropped.increment();
    }

    /** The presence events held now, read at every render. */
    void presenceHeldGauge(IntSupplier held) {
        presenceHeld = held;
    }

    /** Whether a release of held presence events is under way, read at every render. */
    void presenceReleasingGauge(BooleanSupplier releasing) {
        presenceReleasing = releasing;
    }

    /** action: Revocation.ACTIONS, "other" or "malformed" (bounded). */
    void revocation(String action) {
        revocations.computeIfAbsent(action, a -> new LongAdder()).increment();
    }

    void revocationDisconnects(int count) {
        revocationDisconnects.add(count);
    }

    void revocationsSubscribed(boolean subscribed) {
        revocationsSubscribed.set(subscribed ? 1 : 0);
    }

    /** The registered device CAs in use, and the entries of the store refused (not CAs, ...). */
    void deviceCas(int usable, int refused) {
        deviceCas.set(usable);
        deviceCasRefused.set(refused);
    }

    String render() {
        StringBuilder out = new StringBuilder(1024);
        out.append("# HELP ota_broker_connects_total CONNECTs by outcome and reason.\n")
                .append("# TYPE ota_broker_connects_total counter\n");
        Map<String, Long> sorted = new TreeMap<>();
        connects.forEach((reason, count) -> sorted.put(reason.code(), count.sum()));
        sorted.forEach((reason, count) -> out.append("ota_broker_connects_total{result=\"")
                .append("ok".equals(reason) ? "allow" : "deny").append("\",reason=\"")
                .append(reason).append("\"} ").append(count).append('\n'));
        out.append("# HELP ota_broker_connected_clients Clients connected now.\n")
                .append("# TYPE ota_broker_connected_clients gauge\n");
        for (Kind kind : Kind.values()) {
            out.append("ota_broker_connected_clients{kind=\"").append(kind.name().toLowerCase())
                    .append("\"} ").append(connectedNow(kind)).append('\n');
        }
        out.append("# HELP ota_broker_kicks_total Kick requests from the platform.\n")
                .append("# TYPE ota_broker_kicks_total counter\n")
                .append("ota_broker_kicks_total ").append(kicks.sum()).append('\n')
                .append("# HELP ota_broker_presence_failures_total Presence events not published.\n")
                .append("# TYPE ota_broker_presence_failures_total counter\n")
                .append("ota_broker_presence_failures_total ").append(presenceFailures.sum()).append('\n')
                .append("# HELP ota_broker_presence_held Presence events held while no platform client subscribes.\n")
                .append("# TYPE ota_broker_presence_held gauge\n")
                .append("ota_broker_presence_held ").append(presenceHeld.getAsInt()).append('\n')
                .append("# HELP ota_broker_presence_releasing 1 while held presence events are being released.\n")
                .append("# TYPE ota_broker_presence_releasing gauge\n")
                .append("ota_broker_presence_releasing ").append(presenceReleasing.getAsBoolean() ? 1 : 0)
                .append('\n')
                .append("# HELP ota_broker_presence_dropped_total Held presence events dropped at the bound.\n")
                .append("# TYPE ota_broker_presence_dropped_total counter\n")
                .append("ota_broker_presence_dropped_total ").append(presenceDropped.sum()).append('\n');
        out.append("# HELP ota_broker_revocations_total Revocation messages from the credential store.\n")
                .append("# TYPE ota_broker_revocations_total counter\n");
        new TreeMap<>(revocations).forEach((action, count) -> out.append("ota_broker_revocations_total{action=\"")
                .append(action).append("\"} ").append(count.sum()).append('\n'));
        out.append("# HELP ota_broker_revocation_disconnects_total Connections closed by revocations.\n")
                .append("# TYPE ota_broker_revocation_disconnects_total counter\n")
                .append("ota_broker_revocation_disconnects_total ").append(revocationDisconnects.sum()).append('\n')
                .append("# HELP ota_broker_revocations_subscribed 1 while subscribed to the revocation channel.\n")
                .append("# TYPE ota_broker_revocations_subscribed gauge\n")
                .append("ota_broker_revocations_subscribed ").append(revocationsSubscribed.get()).append('\n')
                .append("# HELP ota_broker_device_cas Registered device CAs in use for client certificates.\n")
                .append("# TYPE ota_broker_device_cas gauge\n")
                .append("ota_broker_device_cas ").append(deviceCas.get()).append('\n')
                .append("# HELP ota_broker_device_cas_refused Registered device CA entries that are unusable.\n")
                .append("# TYPE ota_broker_device_cas_refused gauge\n")
                .append("ota_broker_device_cas_refused ").append(deviceCasRefused.get()).append('\n');
        return out.toString();
    }
}
