package io.otarollout.broker;

import com.hivemq.extension.sdk.api.packets.disconnect.DisconnectReasonCode;
import com.hivemq.extension.sdk.api.services.Services;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Disconnects every live connection of one device (MQTT 5 reason 0x98 administrative action,
 * so its presence says "kicked"): the platform's kick and a revocation of its credentials.
 */
final class DeviceKicker {
    private static final Logger LOG = LoggerFactory.getLogger(DeviceKicker.class);

    private final DeviceIndex index;

    DeviceKicker(DeviceIndex index) {
        this.index = index;
    }

    /** Completes with the number of connections disconnected once HiveMQ did; never
     * exceptionally (a failure is logged). */
    CompletableFuture<Integer> kick(String deviceId, String why) {
        Set<String> clients = index.clientsOf(deviceId);
        LOG.info("{} device_id={}: disconnecting {}", why, deviceId, clients);
        if (clients.isEmpty()) {
            return CompletableFuture.completedFuture(0);
        }
        CompletableFuture<?>[] disconnects = clients.stream()
                .map(clientId -> Services.clientService().disconnectClient(
                        clientId, true, DisconnectReasonCode.ADMINISTRATIVE_ACTION, why))
                .toArray(CompletableFuture<?>[]::new);
        return CompletableFuture.allOf(disconnects).handle((ignored, error) -> {
            if (error != null) {
                LOG.warn("{} device_id={} failed: {}", why, deviceId, error.toString());
            }
            return clients.size();
        });
    }
}
