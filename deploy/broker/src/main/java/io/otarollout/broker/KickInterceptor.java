package io.otarollout.broker;

import com.hivemq.extension.sdk.api.async.Async;
import com.hivemq.extension.sdk.api.interceptor.publish.PublishInboundInterceptor;
import com.hivemq.extension.sdk.api.interceptor.publish.parameter.PublishInboundInput;
import com.hivemq.extension.sdk.api.interceptor.publish.parameter.PublishInboundOutput;
import com.hivemq.extension.sdk.api.packets.disconnect.DisconnectReasonCode;
import com.hivemq.extension.sdk.api.services.Services;
import java.time.Duration;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * On platform connections only: a PUBLISH to {@code $ota/kick/{device_id}} disconnects each
 * connection of that device and is never delivered. The platform's PUBACK waits for the
 * disconnects, so an acknowledged kick means the device is off (until it reconnects, which
 * the control plane refuses for a disabled device).
 */
final class KickInterceptor implements PublishInboundInterceptor {
    private static final Logger LOG = LoggerFactory.getLogger(KickInterceptor.class);
    private static final Duration DISCONNECT_TIMEOUT = Duration.ofSeconds(10);

    private final DeviceIndex index;
    private final BrokerMetrics metrics;

    KickInterceptor(DeviceIndex index, BrokerMetrics metrics) {
        this.index = index;
        this.metrics = metrics;
    }

    @Override
    public void onInboundPublish(PublishInboundInput input, PublishInboundOutput output) {
        String topic = input.getPublishPacket().getTopic();
        if (!topic.startsWith(Topics.KICK_PREFIX)) {
            return;
        }
        output.preventPublishDelivery();
        Optional<String> deviceId = Topics.kickedDevice(topic);
        if (deviceId.isEmpty()) {
            LOG.info("ignored a kick on {}: not $ota/kick/{{device_id}}", topic);
            return;
        }
        metrics.kick();
        Set<String> clients = index.clientsOf(deviceId.get());
        LOG.info("kick device_id={}: disconnecting {}", deviceId.get(), clients);
        if (clients.isEmpty()) {
            return;
        }
        Async<PublishInboundOutput> async = output.async(DISCONNECT_TIMEOUT);
        CompletableFuture<?>[] disconnects = clients.stream()
                .map(clientId -> Services.clientService().disconnectClient(
                        clientId, true, DisconnectReasonCode.ADMINISTRATIVE_ACTION, "kicked"))
                .toArray(CompletableFuture<?>[]::new);
        CompletableFuture.allOf(disconnects).whenComplete((ignored, error) -> {
            if (error != null) {
                LOG.warn("kick device_id={} failed: {}", deviceId.get(), error.toString());
            }
            async.resume();
        });
    }
}
