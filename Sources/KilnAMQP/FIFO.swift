/// A first-in first-out queue that does not move its elements on every removal.
struct FIFO<Element> {
    private var elements: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == elements.count }
    var count: Int { elements.count - head }

    mutating func append(_ element: Element) { elements.append(element) }

    mutating func prepend(contentsOf items: [Element]) {
        elements.replaceSubrange(0..<head, with: [])
        head = 0
        elements.insert(contentsOf: items, at: 0)
    }

    mutating func popFirst() -> Element? {
        guard head < elements.count else { return nil }
        let element = elements[head]
        head += 1
        if head > 1_024, head * 2 > elements.count {
            elements.removeFirst(head)
            head = 0
        }
        return element
    }

    mutating func removeAll() -> [Element] {
        let rest = Array(elements[head...])
        elements.removeAll()
        head = 0
        return rest
    }
}
