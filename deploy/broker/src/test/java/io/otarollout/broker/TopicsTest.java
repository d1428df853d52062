package io.otarollout.broker;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.otarollout.broker.Topics.Activity;
import io.otarollout.broker.Topics.Grant;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;

class TopicsTest {
    @Test
    void aDevicePublishesItsUplinksAndReadsItsSystemTopicsOnly() {
        assertEquals(List.of(
                        new Grant("$oc/devices/d1/sys/+/up", Activity.PUBLISH),
                        new Grant("$oc/devices/d1/sys/properties/report", Activity.PUBLISH),
                        new Grant("$oc/devices/d1/sys/#", Activity.SUBSCRIBE)),
                Topics.deviceGrants("d1"));
    }

    @Test
    void thePlatformGetsTheDollarTreesByName() {
        assertEquals(List.of("#", "$oc/#", "$ota/#"),
                Topics.platformGrants().stream().map(Grant::filter).toList());
        assertTrue(Topics.platformGrants().stream().allMatch(g -> g.activity() == Activity.ALL));
    }

    @Test
    void downlinksAreSubscribedServerSide() {
        assertEquals(List.of("$oc/devices/d1/sys/events/down", "$oc/devices/d1/sys/messages/down"),
                Topics.serverSideSubscriptions("d1"));
    }

    @Test
    void presenceAndKickTopics() {
        assertEquals("$ota/presence/d1", Topics.presence("d1"));
        assertEquals(Optional.of("d1"), Topics.kickedDevice("$ota/kick/d1"));
        assertEquals(Optional.empty(), Topics.kickedDevice("$ota/kick/"));
        assertEquals(Optional.empty(), Topics.kickedDevice("$ota/kick/a/b"));
        assertEquals(Optional.empty(), Topics.kickedDevice("$ota/presence/d1"));
    }
}
