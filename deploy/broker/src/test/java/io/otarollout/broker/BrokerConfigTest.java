package io.otarollout.broker;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.StringReader;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import javax.xml.parsers.DocumentBuilderFactory;
import org.junit.jupiter.api.Test;
import org.w3c.dom.Document;
import org.w3c.dom.Element;
import org.w3c.dom.NodeList;
import org.xml.sax.InputSource;

class BrokerConfigTest {
    private static Map<String, String> minimal() {
        Map<String, String> env = new HashMap<>();
        env.put("OTA_BROKER_STATE_DIR", "/tmp/broker");
        env.put("OTA_BROKER_TLS_KEYSTORE", "/tmp/tls/server.p12");
        env.put("OTA_BROKER_TLS_KEYSTORE_PASSWORD", "ks-secret");
        env.put("OTA_BROKER_AUTH_URL", "http://127.0.0.1:8080/v1/broker/authenticate");
        env.put("OTA_BROKER_AUTH_KEY", "dev-broker-key");
        env.put("OTA_MQTT_PLATFORM_USER", "ota-platform");
        env.put("OTA_MQTT_PLATFORM_PASSWORD", "platform-secret");
        return env;
    }

    @Test
    void defaults() {
        BrokerConfig config = BrokerConfig.fromEnv(minimal());
        assertEquals(8883, config.tlsPort());
        assertEquals(1893, config.plainPort());
        assertEquals(1894, config.platformPort());
        assertEquals(9410, config.metricsPort());
        assertEquals("127.0.0.1", config.platformHost());
        assertEquals(Duration.ofSeconds(2), config.authTimeout());
        assertEquals(1000, config.receiveMaximum());
        assertEquals(1000, config.inflightWindow());
        assertEquals(0, config.connectRatePerSecond());
        assertEquals(Path.of("/tmp/broker/conf"), config.configFolder());
    }

    @Test
    void reportsEveryBadVariableAtOnce() {
        Map<String, String> env = minimal();
        env.put("OTA_BROKER_TLS_PORT", "88830");
        env.put("OTA_BROKER_AUTH_URL", "ftp://x");
        env.put("OTA_BROKER_RECEIVE_MAXIMUM", "lots");
        env.remove("OTA_MQTT_PLATFORM_PASSWORD");
        String message = assertThrows(ConfigException.class, () -> BrokerConfig.fromEnv(env)).getMessage();
        for (String name : new String[] {"OTA_BROKER_TLS_PORT=88830", "OTA_BROKER_AUTH_URL=ftp://x",
                "OTA_BROKER_RECEIVE_MAXIMUM=lots", "OTA_MQTT_PLATFORM_PASSWORD is not set"}) {
            assertTrue(message.contains(name), message);
        }
    }

    @Test
    void portsMustDifferAndAPlatformListenerExists() {
        Map<String, String> env = minimal();
        env.put("OTA_BROKER_PORT", "1894");
        assertThrows(ConfigException.class, () -> BrokerConfig.fromEnv(env));
        env.put("OTA_BROKER_PORT", "1893");
        env.put("OTA_BROKER_PLATFORM_PORT", "0");
        assertThrows(ConfigException.class, () -> BrokerConfig.fromEnv(env));
    }

    @Test
    void tlsOffNeedsNoKeystore() {
        Map<String, String> env = minimal();
        env.put("OTA_BROKER_TLS_PORT", "0");
        env.remove("OTA_BROKER_TLS_KEYSTORE");
        env.remove("OTA_BROKER_TLS_KEYSTORE_PASSWORD");
        assertEquals(0, BrokerConfig.fromEnv(env).tlsPort());
    }

    @Test
    void toStringHidesSecrets() {
        String text = BrokerConfig.fromEnv(minimal()).toString();
        for (String secret : new String[] {"ks-secret", "dev-broker-key", "platform-secret"}) {
            assertFalse(text.contains(secret), text);
        }
    }

    @Test
    void configXmlHasTheListenersAndLimits() {
        Map<String, String> env = minimal();
        env.put("OTA_BROKER_TLS_KEYSTORE_PASSWORD", "a<b&c");
        String xml = HiveMqConfigXml.render(BrokerConfig.fromEnv(env));
        assertTrue(xml.contains("<port>8883</port>"));
        assertTrue(xml.contains("<name>device-tls</name>"));
        assertTrue(xml.contains("<name>device-plain</name>"));
        assertTrue(xml.contains("<name>platform</name>"));
        assertTrue(xml.contains("<password>a&lt;b&amp;c</password>"));
        assertTrue(xml.contains("<server-receive-maximum>1000</server-receive-maximum>"));
        assertTrue(xml.contains("<mode>in-memory</mode>"));
        env.put("OTA_BROKER_PORT", "0");
        assertFalse(HiveMqConfigXml.render(BrokerConfig.fromEnv(env)).contains("device-plain"));
    }

    /** The listener element named {@code name} in the rendered config (parsed, not grepped). */
    private static Element listener(String xml, String name) throws Exception {
        Document doc = DocumentBuilderFactory.newInstance().newDocumentBuilder()
                .parse(new InputSource(new StringReader(xml)));
        NodeList names = doc.getElementsByTagName("name");
        for (int i = 0; i < names.getLength(); i++) {
            if (names.item(i).getTextContent().equals(name)) {
                return (Element) names.item(i).getParentNode();
            }
        }
        throw new AssertionError("no listener " + name + " in\n" + xml);
    }

    private static String child(Element parent, String path) {
        Element at = parent;
        for (String tag : path.split("/")) {
            at = (Element) at.getElementsByTagName(tag).item(0);
            if (at == null) {
                return null;
            }
        }
        return at.getTextContent();
    }

    @Test
    void platformListenerIsPlainTcpUnlessAskedForTls() throws Exception {
        Element plain = listener(HiveMqConfigXml.render(BrokerConfig.fromEnv(minimal())), "platform");
        assertEquals("tcp-listener", plain.getTagName());
        assertEquals(null, child(plain, "tls"));
    }

    @Test
    void platformTlsServesTheDeviceListenersKeystoreWithoutClientCertificates() throws Exception {
        Map<String, String> env = minimal();
        env.put("OTA_BROKER_PLATFORM_TLS", "1");
        env.put("OTA_BROKER_PLATFORM_HOST", "0.0.0.0");
        env.put("OTA_BROKER_TLS_KEYSTORE_PASSWORD", "a<b");
        BrokerConfig config = BrokerConfig.fromEnv(env);
        assertTrue(config.platformTls());
        assertTrue(config.toString().contains("platform tls 0.0.0.0:1894"), config.toString());
        Element platform = listener(HiveMqConfigXml.render(config), "platform");
        assertEquals("tls-tcp-listener", platform.getTagName());
        assertEquals("1894", child(platform, "port"));
        assertEquals("0.0.0.0", child(platform, "bind-address"));
        assertEquals("/tmp/tls/server.p12", child(platform, "tls/keystore/path"));
        assertEquals("a<b", child(platform, "tls/keystore/password"));
        assertEquals("a<b", child(platform, "tls/keystore/private-key-password"));
        assertEquals("NONE", child(platform, "tls/client-authentication-mode"));
        assertEquals(null, child(platform, "tls/truststore"));
        // The device listener keeps its own TLS block beside it.
        Element devices = listener(HiveMqConfigXml.render(config), "device-tls");
        assertEquals("/tmp/tls/server.p12", child(devices, "tls/keystore/path"));
    }

    @Test
    void platformTlsNeedsTheKeystoreEvenWithTheDeviceTlsListenerOff() {
        Map<String, String> env = minimal();
        env.put("OTA_BROKER_TLS_PORT", "0");
        env.put("OTA_BROKER_PLATFORM_TLS", "1");
        env.remove("OTA_BROKER_TLS_KEYSTORE");
        String message = assertThrows(ConfigException.class, () -> BrokerConfig.fromEnv(env)).getMessage();
        assertTrue(message.contains("OTA_BROKER_TLS_KEYSTORE "), message);
        env.put("OTA_BROKER_TLS_KEYSTORE", "/tmp/tls/server.p12");
        assertTrue(BrokerConfig.fromEnv(env).platformTls());
    }

    @Test
    void platformTlsIsZeroOrOne() {
        Map<String, String> env = minimal();
        env.put("OTA_BROKER_PLATFORM_TLS", "yes");
        String message = assertThrows(ConfigException.class, () -> BrokerConfig.fromEnv(env)).getMessage();
        assertTrue(message.contains("OTA_BROKER_PLATFORM_TLS=yes is not one of 0, 1"), message);
    }

    @Test
    void redisModeNeedsTheStoreNotTheEndpoint() {
        Map<String, String> env = minimal();
        env.remove("OTA_BROKER_AUTH_URL");
        env.remove("OTA_BROKER_AUTH_KEY");
        env.put("OTA_BROKER_AUTH_MODE", "redis");
        env.put("OTA_BROKER_REDIS_URL", "redis://127.0.0.1:6379/1");
        BrokerConfig config = BrokerConfig.fromEnv(env);
        assertEquals(BrokerConfig.AuthMode.REDIS, config.authMode());
        assertEquals("ota:sched:cred:", config.credentialPrefix());
        assertEquals("ota:sched:cred-revoked", config.revocationChannel());
        assertTrue(config.devCredentialKeys());
        assertEquals("dev0", config.credentialKeys().current());
        assertTrue(config.listensForRevocations());
        env.put("OTA_CREDENTIAL_KEYS", "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
        assertFalse(BrokerConfig.fromEnv(env).devCredentialKeys());
    }

    @Test
    void httpModeIsTheDefaultAndListensForRevocationsOnlyWithAStore() {
        BrokerConfig config = BrokerConfig.fromEnv(minimal());
        assertEquals(BrokerConfig.AuthMode.HTTP, config.authMode());
        assertFalse(config.listensForRevocations());
        Map<String, String> env = minimal();
        env.put("OTA_BROKER_REDIS_URL", "redis://:pw@127.0.0.1:6379/1");
        assertTrue(BrokerConfig.fromEnv(env).listensForRevocations());
        assertFalse(BrokerConfig.fromEnv(env).toString().contains("pw@"));
    }

    @Test
    void badRedisModeSettingsAreNamed() {
        Map<String, String> env = minimal();
        env.put("OTA_BROKER_AUTH_MODE", "ldap");
        assertTrue(assertThrows(ConfigException.class, () -> BrokerConfig.fromEnv(env)).getMessage()
                .contains("OTA_BROKER_AUTH_MODE=ldap is not one of http, redis"));
        env.put("OTA_BROKER_AUTH_MODE", "redis");
        String missing = assertThrows(ConfigException.class, () -> BrokerConfig.fromEnv(env)).getMessage();
        assertTrue(missing.contains("OTA_BROKER_REDIS_URL is not set"), missing);
        env.put("OTA_BROKER_REDIS_URL", "http://127.0.0.1:6379/1");
        env.put("OTA_CREDENTIAL_KEYS", "k1:short");
        String bad = assertThrows(ConfigException.class, () -> BrokerConfig.fromEnv(env)).getMessage();
        assertTrue(bad.contains("OTA_BROKER_REDIS_URL=http://127.0.0.1:6379/1 is not a redis://"), bad);
        assertTrue(bad.contains("OTA_CREDENTIAL_KEYS key 'k1'"), bad);
        env.put("OTA_BROKER_REDIS_URL", "redis://127.0.0.1:6379/1");
        env.remove("OTA_CREDENTIAL_KEYS");
        env.put("OTA_TOKEN_KEYS", "k1:a-long-download-token-secret");
        String configured = assertThrows(ConfigException.class, () -> BrokerConfig.fromEnv(env)).getMessage();
        assertTrue(configured.contains("OTA_CREDENTIAL_KEYS is required once OTA_TOKEN_KEYS is set"), configured);
    }
}
