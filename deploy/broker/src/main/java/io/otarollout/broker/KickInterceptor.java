package io.otarollout.broker;

import com.hivemq.extension.sdk.api.async.Async;
import com.hivemq.extension.sdk.api.interceptor.publish.PublishInboundInterceptor;
import com.hivemq.extension.sdk.api.interceptor.publish.parameter.PublishInboundInput;
import com.hivemq.extension.sdk.api.interceptor.publish.parameter.PublishInboundOutput;
import java.time.Duration;
import java.util.Optional;
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

    private final DeviceKicker kicker;
    private final BrokerMetrics metrics;

    KickInterceptor(DeviceKicker kicker, BrokerMetrics metrics) {
        this.kicker = kicker;
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
        Async<PublishInboundOutput> async = output.async(DISCONNECT_TIMEOUT);
        kicker.kick(deviceId.get(), "kicked").whenComplete((count, error) -> async.resume());
    }
}
