package io.otarollout.broker;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Which client ids each device is connected with now, for kicks. A device may hold several
 * connections (its client id changes with the hour), so a kick disconnects each of them.
 * Entries are counted per connection: a take-over (same client id connecting again) adds a
 * second count before the old connection's disconnect removes one.
 */
final class DeviceIndex {
    private final ConcurrentHashMap<String, ConcurrentHashMap<String, Integer>> clients =
            new ConcurrentHashMap<>();

    void add(String deviceId, String clientId) {
        clients.compute(deviceId, (device, held) -> {
            ConcurrentHashMap<String, Integer> map = held == null ? new ConcurrentHashMap<>() : held;
            map.merge(clientId, 1, Integer::sum);
            return map;
        });
    }

    void remove(String deviceId, String clientId) {
        clients.computeIfPresent(deviceId, (device, held) -> {
            held.computeIfPresent(clientId, (id, count) -> count > 1 ? count - 1 : null);
            return held.isEmpty() ? null : held;
        });
    }

    Set<String> clientsOf(String deviceId) {
        ConcurrentHashMap<String, Integer> held = clients.get(deviceId);
        return held == null ? Set.of() : Set.copyOf(held.keySet());
    }
}
