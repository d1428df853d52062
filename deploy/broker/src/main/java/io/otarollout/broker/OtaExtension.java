package io.otarollout.broker;

import com.hivemq.extension.sdk.api.ExtensionMain;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartOutput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopOutput;
import com.hivemq.extension.sdk.api.services.Services;

/** Wires the extension's pieces into HiveMQ; each piece is one class with one concern. */
final class OtaExtension implements ExtensionMain {
    private final BrokerConfig config;
    private final BrokerMetrics metrics;

    OtaExtension(BrokerConfig config, BrokerMetrics metrics) {
        this.config = config;
        this.metrics = metrics;
    }

    @Override
    public void extensionStart(ExtensionStartInput input, ExtensionStartOutput output) {
        OtaAuthenticator authenticator = new OtaAuthenticator(
                new PlatformAccount(config.platformUser(), config.platformPassword()),
                new AuthClient(config.authUrl(), config.authKey(), config.authTimeout()),
                new ConnectRateLimiter(config.connectRatePerSecond(), System::nanoTime),
                metrics,
                config.authTimeout());
        DeviceIndex index = new DeviceIndex();
        Presence presence = new Presence(metrics);
        KickInterceptor kick = new KickInterceptor(index, metrics);
        Services.securityRegistry().setAuthenticatorProvider(providerInput -> authenticator);
        OnlineAnnouncements announcements = new OnlineAnnouncements();
        Services.initializerRegistry().setClientInitializer(
                new DeviceInitializer(metrics, index, presence, kick, announcements));
        PresenceListener lifecycle = new PresenceListener(metrics, index, presence, announcements);
        Services.eventRegistry().setClientLifecycleEventListener(providerInput -> lifecycle);
    }

    @Override
    public void extensionStop(ExtensionStopInput input, ExtensionStopOutput output) {}
}
