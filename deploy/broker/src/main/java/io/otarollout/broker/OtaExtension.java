package io.otarollout.broker;

import com.hivemq.extension.sdk.api.ExtensionMain;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartOutput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopOutput;
import com.hivemq.extension.sdk.api.services.Services;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Wires the extension's pieces into HiveMQ; each piece is one class with one concern. */
final class OtaExtension implements ExtensionMain {
    private static final Logger LOG = LoggerFactory.getLogger(OtaExtension.class);

    private final BrokerConfig config;
    private final BrokerMetrics metrics;
    private final DeviceCas deviceCas;
    private RedisConnections redis;
    private RedisCredentialStore store;
    private RevocationListener revocations;

    OtaExtension(BrokerConfig config, BrokerMetrics metrics, DeviceCas deviceCas) {
        this.config = config;
        this.metrics = metrics;
        this.deviceCas = deviceCas;
    }

    @Override
    public void extensionStart(ExtensionStartInput input, ExtensionStartOutput output) {
        if (config.listensForRevocations()) {
            redis = new RedisConnections(config.redisUrl(), config.authTimeout());
        }
        OtaAuthenticator authenticator = new OtaAuthenticator(
                new PlatformAccount(config.platformUser(), config.platformPassword()),
                deviceAuthenticator(),
                new ConnectRateLimiter(config.connectRatePerSecond(), System::nanoTime),
                metrics,
                config.authTimeout());
        DeviceIndex index = new DeviceIndex();
        DeviceKicker kicker = new DeviceKicker(index);
        Presence presence = new Presence(metrics, new PresenceHold(config.presenceHoldMax()),
                Services.extensionExecutorService());
        KickInterceptor kick = new KickInterceptor(kicker, metrics);
        Services.securityRegistry().setAuthenticatorProvider(providerInput -> authenticator);
        OnlineAnnouncements announcements = new OnlineAnnouncements();
        Services.initializerRegistry().setClientInitializer(
                new DeviceInitializer(metrics, index, presence, kick, announcements));
        PresenceListener lifecycle = new PresenceListener(metrics, index, presence, announcements);
        Services.eventRegistry().setClientLifecycleEventListener(providerInput -> lifecycle);
        if (redis != null) {
            revocations = new RevocationListener(redis, config.revocationChannel(), kicker, metrics);
            revocations.start();
        }
    }

    private DeviceAuthenticator deviceAuthenticator() {
        if (config.authMode() == BrokerConfig.AuthMode.HTTP) {
            return new HttpDeviceAuth(new AuthClient(config.authUrl(), config.authKey(), config.authTimeout()),
                    deviceCas::anchors, System::currentTimeMillis);
        }
        if (config.devCredentialKeys()) {
            LOG.warn("device secrets are opened with the public development key: "
                    + "set OTA_CREDENTIAL_KEYS (the scheduler's) outside development");
        }
        store = new RedisCredentialStore(redis, config.credentialPrefix(), config.authTimeout(), System::nanoTime);
        store.start();
        return new RedisDeviceAuth(store,
                new CredentialCheck(new SecretBox(config.credentialKeys()), deviceCas::anchors,
                        System::currentTimeMillis), System::currentTimeMillis);
    }

    @Override
    public void extensionStop(ExtensionStopInput input, ExtensionStopOutput output) {
        if (revocations != null) {
            revocations.close();
        }
        if (store != null) {
            store.close();
        }
        if (redis != null) {
            redis.close();
        }
    }
}
