package io.otarollout.broker;

import com.hivemq.extension.sdk.api.async.Async;
import com.hivemq.extension.sdk.api.async.TimeoutFallback;
import com.hivemq.extension.sdk.api.auth.SimpleAuthenticator;
import com.hivemq.extension.sdk.api.auth.parameter.SimpleAuthInput;
import com.hivemq.extension.sdk.api.auth.parameter.SimpleAuthOutput;
import com.hivemq.extension.sdk.api.client.parameter.ClientTlsInformation;
import com.hivemq.extension.sdk.api.client.parameter.ConnectionInformation;
import com.hivemq.extension.sdk.api.client.parameter.Listener;
import com.hivemq.extension.sdk.api.packets.connect.ConnackReasonCode;
import com.hivemq.extension.sdk.api.packets.connect.ConnectPacket;
import java.net.InetAddress;
import java.nio.ByteBuffer;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Decides every CONNECT. On the platform listener only the platform account gets in
 * (checked here); on the device listeners everyone else is a device, decided by the
 * {@link DeviceAuthenticator} of the mode (the control plane over HTTP, or the credential
 * store) without blocking HiveMQ's thread ({@code output.async} until the answer arrives).
 * Granted permissions are set here, DENY by default; see {@link Topics}.
 */
final class OtaAuthenticator implements SimpleAuthenticator {
    private static final Logger LOG = LoggerFactory.getLogger(OtaAuthenticator.class);

    private final PlatformAccount platform;
    private final DeviceAuthenticator devices;
    private final ConnectRateLimiter limiter;
    private final BrokerMetrics metrics;
    private final Duration asyncTimeout;

    OtaAuthenticator(PlatformAccount platform, DeviceAuthenticator devices, ConnectRateLimiter limiter,
            BrokerMetrics metrics, Duration authTimeout) {
        this.platform = platform;
        this.devices = devices;
        this.limiter = limiter;
        this.metrics = metrics;
        // HiveMQ's own fallback only fires if the authenticator's timeout somehow did not.
        this.asyncTimeout = authTimeout.plusSeconds(1);
    }

    @Override
    public void onConnect(SimpleAuthInput input, SimpleAuthOutput output) {
        ConnectPacket connect = input.getConnectPacket();
        String clientId = connect.getClientId();
        String username = connect.getUserName().orElse("");
        byte[] password = connect.getPassword().map(OtaAuthenticator::copy).orElse(new byte[0]);
        ConnectionInformation connection = input.getConnectionInformation();
        String listener = connection.getListener().map(Listener::getName).orElse("");

        if (BrokerConfig.PLATFORM_LISTENER.equals(listener)) {
            if (!platform.isPlatformUser(username)) {
                refuse(output, clientId, Reason.DEVICE_ON_PLATFORM_LISTENER, "");
            } else if (!platform.passwordMatches(password)) {
                refuse(output, clientId, Reason.BAD_PASSWORD, "platform account");
            } else {
                Permissions.apply(output.getDefaultPermissions(), Topics.platformGrants());
                metrics.connect(Reason.OK);
                output.authenticateSuccessfully();
            }
            return;
        }
        if (platform.isPlatformUser(username)) {
            refuse(output, clientId, Reason.PLATFORM_ON_DEVICE_LISTENER, "");
            return;
        }
        Optional<AuthDecision> screened = devices.screen(clientId, username);
        if (screened.isPresent()) {
            refuse(output, clientId, screened.get().reason(), screened.get().detail());
            return;
        }
        if (!limiter.tryAcquire()) {
            refuse(output, clientId, Reason.RATE_LIMITED, "");
            return;
        }
        String peer = connection.getInetAddress().map(InetAddress::getHostAddress).orElse("");
        Async<SimpleAuthOutput> async = output.async(asyncTimeout, TimeoutFallback.FAILURE,
                ConnackReasonCode.SERVER_UNAVAILABLE, Reason.AUTH_UNAVAILABLE.code());
        CompletableFuture<AuthDecision> answer;
        try {
            answer = devices.authenticate(clientId, username, password, peer, certificates(connection));
        } catch (RuntimeException e) {
            // Never leave the connection to HiveMQ's timeout: that would be neither logged nor counted.
            answer = CompletableFuture.completedFuture(AuthDecision.unavailable(e.toString()));
        }
        answer.whenComplete((decision, error) -> {
            try {
                AuthDecision outcome = error == null ? decision : AuthDecision.unavailable(error.toString());
                finish(input, output, clientId, outcome);
            } finally {
                async.resume();
            }
        });
    }

    private void finish(SimpleAuthInput input, SimpleAuthOutput output, String clientId,
            AuthDecision decision) {
        if (!decision.allowed()) {
            refuse(output, clientId, decision.reason(), decision.detail());
            return;
        }
        ConnectionAttributes.rememberDevice(
                input.getConnectionInformation().getConnectionAttributeStore(), decision.deviceId());
        Permissions.apply(output.getDefaultPermissions(), Topics.deviceGrants(decision.deviceId()));
        metrics.connect(Reason.OK);
        LOG.debug("accepted client_id={} device_id={}", clientId, decision.deviceId());
        output.authenticateSuccessfully();
    }

    private void refuse(SimpleAuthOutput output, String clientId, Reason reason, String detail) {
        metrics.connect(reason);
        LOG.info("refused client_id={} reason={}{}", clientId, reason.code(),
                detail.isEmpty() ? "" : " (" + detail + ")");
        output.failAuthentication(reason.connack, reason.code());
    }

    /** The chain the device presented in the TLS handshake (the device listener asks for one
     * without requiring it), or null. */
    private static X509Certificate[] certificates(ConnectionInformation connection) {
        return connection.getClientTlsInformation()
                .flatMap(ClientTlsInformation::getClientCertificateChain)
                .orElse(null);
    }

    private static byte[] copy(ByteBuffer buffer) {
        ByteBuffer view = buffer.duplicate();
        byte[] bytes = new byte[view.remaining()];
        view.get(bytes);
        return bytes;
    }
}
