import KilnVM
import Testing

@Suite("Durations for people")
struct DurationTextTests {
    @Test(arguments: [
        (Duration.microseconds(850), "850 µs"),
        (.microseconds(4_249), "4.2 ms"),
        (.milliseconds(5), "5 ms"),
        (.milliseconds(310), "310 ms"),
        (.nanoseconds(38_506_682_256), "38.5 s"),
        (.seconds(12), "12 s"),
        (.seconds(125), "2 min 5 s"),
        (.seconds(120), "2 min"),
        (.seconds(4_320), "1 h 12 min"),
        (.zero, "0 µs"),
        (.milliseconds(-1_500), "-1.5 s"),
    ])
    func readsAsAPersonWouldWriteIt(duration: Duration, text: String) {
        #expect(duration.text == text)
    }
}
